"""Regenerate the demo's preference data (dpo_plugin/demo/data/{train,test}.jsonl) deterministically."""

from dpo_plugin.demo.arithmetic import write

if __name__ == "__main__":
    for path in write():
        print(path)
