"""What passes between stages: the synthesizer's wire format (`wire`), the typed records written and read as JSON
lines (`records`) and Megatron's `.bin/.idx` indexed dataset (`indexed`). Producer and consumer stages both import
from here, never from each other."""
