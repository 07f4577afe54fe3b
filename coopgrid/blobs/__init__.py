from coopgrid.blobs.base import BlobStore, BlobWriter
from coopgrid.blobs.directory import DirectoryBlobStore
from coopgrid.blobs.spec import open_blob_store

__all__ = ["BlobStore", "BlobWriter", "DirectoryBlobStore", "open_blob_store"]
