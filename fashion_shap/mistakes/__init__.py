"""The mistakes stage's parts: shards (explaining on Ray), concentration (the metrics), figure."""
