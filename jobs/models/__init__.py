"""Models by name (registry: project, torchvision, timm) and model surgery (surgery)."""
