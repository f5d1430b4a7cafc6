"""Key stores: where wrapped data keys live, behind one small protocol."""
