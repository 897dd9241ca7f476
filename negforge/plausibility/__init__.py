"""Plausibility of sentences under a local causal LM (llama.cpp in process)."""
