from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpo_plugin.trl import DPOConfig, DPOTrainer

model_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
model = AutoModelForCausalLM.from_pretrained(model_id)
tokenizer = AutoTokenizer.from_pretrained(model_id)
pairs = load_dataset("trl-lib/ultrafeedback_binarized")

args = DPOConfig(
    output_dir="runs/smollm2-dpo",
    bf16=False,  # TRL's default (True) needs a GPU with bf16
    max_steps=200,
    learning_rate=5e-5,
    loss_type=["sigmoid", "sft"],  # any registered loss; several are mixed with loss_weights
    loss_weights=[1.0, 0.5],
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
trainer.train()
trainer.save_model()
report = trainer.check_report  # what runs/smollm2-dpo/eval/report.json holds
print(report["passed"], report["checks"]["reward_margin"]["metrics"]["accuracy"])
