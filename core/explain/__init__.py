"""Floor 2: explanations that are faithful to the model, not decoration.

- `gradcam`: Grad-CAM / Grad-CAM++ heatmaps for the image model, mapped back onto the photo;
- `text_shap`: word-level SHAP values for the text model, additive by construction;
- `modality`: how much of the fused decision came from the description and how much from the photo;
- `service`: one call that does all three for a product, caching the heavy set-up per loaded Classifier.

Nothing here imports TensorFlow at package import time (`python -m core --help` stays fast).
"""
