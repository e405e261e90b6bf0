"""Views: the seed → augmentation codec, recipes, and bit-exact replay of a view."""
