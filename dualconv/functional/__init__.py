"""Pure forward/backward functions, written once against numpy or cupy arrays."""
