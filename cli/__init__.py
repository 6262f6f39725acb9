"""The `aperture` command line (cli/main.py).

- main.py       the commands and how errors become exit codes
- demo.py       `aperture demo` / `up`: the whole system on embedded servers
- embedded.py   the embedded PostgreSQL and Redis (the `embedded` extra)
- processes.py  starting and stopping the system's own processes
- flower.py     Flower, behind basic auth
- preflight.py  what must answer before anything starts
- ops.py        `aperture jobs ...`, `db`, `schema`, `sweep`: what an operator does
- media.py      `aperture media ...`: scoring from the command line
- library.py    `aperture assets|tags ...`: the library
- report.py     `aperture report`: the library as one offline HTML page (the `report` extra)
"""
