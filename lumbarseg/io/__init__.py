"""Reading and writing images and volumes, always with their geometry."""
