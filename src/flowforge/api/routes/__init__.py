"""The API's routes, one module per resource; each class registers its routes on the app."""
