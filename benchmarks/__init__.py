"""End-to-end studies on real data and the report built from their result files."""
