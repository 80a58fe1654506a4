"""The model side: loading a CLIP/SigLIP folder, preprocessing inputs, the forward pass."""
