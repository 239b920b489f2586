"""The pipeline's stages, one script each, and the code they share."""
