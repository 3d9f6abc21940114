"""Low-rank adapters (LoRA) and a quantized frozen base (QLoRA) for the Flax policy.

`lora` owns the adapters' tree (which leaves are adapters, init, merge, the trainable mask),
`quant` the 4-bit / 8-bit storage of the base's projections, `peft_format` the Hugging Face
PEFT files, `memory` the start-up memory plan. The decoder itself (`models/transformer.Linear`)
reads the adapter and quantized leaves, so every caller of `Decoder.apply` runs them as is.
"""
