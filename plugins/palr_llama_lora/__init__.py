"""Built-in plugin palr_llama_lora (work in progress: registers nothing yet)."""
