"""Images: the dataset walk (ImageFolder), image decode paths, and the bundled demo photos."""
