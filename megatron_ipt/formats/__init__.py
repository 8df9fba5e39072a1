"""What passes between stages: the synthesizer's wire format (`wire`) and the typed records written and read as
JSON lines (`records`). Producer and consumer stages both import from here, never from each other."""
