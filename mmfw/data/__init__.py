"""Data: LLaVA-format records -> conversations -> token ids and labels (chat template, supervised spans, truncation),
images, datasets and collators, data checks and skip reports, the synthetic visual-QA generator and the offline
tokenizer trainer. Above the model layer (it uses the image strategy and the tokenizer), below training.
"""
