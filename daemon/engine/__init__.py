"""Pure analysis: probe, sample, plan, ask the model, turn answers into events. No store, no plugins."""
