"""Stock SMTP AUTH checkers: the engine speaks SASL, these plugins check credentials."""
