"""LIBERO environments (dtp[libero]); nothing here imports LIBERO at package import."""
