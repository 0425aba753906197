"""Built-in adapter recipes: how a run wraps the policy with peft, or trains it fully (``none``).

A recipe (:class:`~dpo_plugin.adapter_recipes.recipe.AdapterRecipe`) has a pre-load part, run
before the model loads (QLoRA's 4-bit quantization and its CUDA check), and a peft-config part
built for the loaded model; ``changes_base_weights`` marks PiSSA and OLoRA, whose initialisation
rewrites the base weights. The LoRA family shares one builder (:mod:`.lora`).

(The package is not called ``adapters``: a subpackage of that name would replace the public
``dpo_plugin.adapters()`` function with itself as soon as it is imported.)
"""
