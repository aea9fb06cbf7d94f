"""Token-level offloading (speculative decoding between a device SLM and an edge LLM): the round
evaluator (:mod:`mec_env.spec.model`) and the controllers of U-HLM and GELATO
(:mod:`mec_env.spec.control`). Traces come from :mod:`mec_env.lm.token_traces`."""
