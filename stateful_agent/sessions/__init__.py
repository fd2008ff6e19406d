"""The read side and the whole conversation: sessions as the API shows them, transcripts, cursors."""
