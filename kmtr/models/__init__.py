"""Tokeniser, ViT encoder and masked autoencoders."""
