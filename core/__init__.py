"""The methods' mathematics, in plain torch. Never imports comfy: usable from a script, a
diffusers pipeline or ComfyUI, and testable in milliseconds."""
