from coopgrid.blobs.store import BlobStore

__all__ = ["BlobStore"]
