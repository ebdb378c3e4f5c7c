"""The compile report: figures measured on the written program (``figures``), the per-node
error table (``node_errors``), pictures (``plots``) and the self-contained HTML page
(``html_page``); ``report.json`` holds every number the page shows."""
