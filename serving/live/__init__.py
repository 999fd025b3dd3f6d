"""The live loop: what the served model sees (a sample of live requests) feeds the next retrain."""
