"""Fine-tuning: recipes, datasets, metrics, the training engine and the ``finetune`` /
``evaluate`` / ``compare`` commands.

Example:
    >>> from dysample_swap.finetune.config import load_config
    >>> load_config("demo").task
    'segmentation'
"""
