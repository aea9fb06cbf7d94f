"""Language-model side: prompts, uncertainty metrics, the trace profiler, a bAbI word-level LM.

Modules here import torch and transformers (the ``lm`` extra); the simulator does not.
"""
