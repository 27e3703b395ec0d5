"""MCP tools, one module per domain app; each tool is a few lines calling one service or selector."""
