"""Database models and session shared by the API and the workers."""
