"""What a model is made of: types, analytic builders, the meta-device fallback, the resolver. No torch at module
level."""
