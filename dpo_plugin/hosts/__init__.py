"""Hosts: the fine-tuning frameworks whose trainers run a DPO session (TRL, Axolotl)."""
