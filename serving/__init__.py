"""TF Serving configuration, gRPC client and streaming inference."""
