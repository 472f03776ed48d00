"""Training pipeline: TweetEval in, a gated, quantized fastText model (plus its metrics) out."""
