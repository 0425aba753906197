"""Regenerate the demo's preference data (dpo_plugin/data/demo/{train,test}.jsonl) deterministically."""

from dpo_plugin.demo_data import write

if __name__ == "__main__":
    for path in write():
        print(path)
