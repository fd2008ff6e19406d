"""The stored data: the typed documents, their strict JSON, and the windows a warm instance keeps."""
