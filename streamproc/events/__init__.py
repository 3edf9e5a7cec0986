"""The event contract: typed event structs and the decoder that validates them."""
