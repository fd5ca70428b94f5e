"""Text-to-image generation: the shapes world, the embedded model, its training and the runtime."""

# The embedded model scores best at guidance 3–4 (README); SD-family models are usually run at 7.5.
# Kept here, free of imports, so `hallmark`'s argument parser can read it without loading PIL or torch.
DEFAULT_GUIDANCE = 4.0
