"""Reading sweeps back and showing them: the store's sweeps and jobs (`runs`), the comparison table
(`table`, with `stats` behind grouped rows), the report folder (`report`, `plots`, `html`), and text from
users kept as text in Markdown (`mdtext`).
"""
