"""krakenfeed benchmarks: ``python -m benchmarks [names…]``.

Each benchmark measures krakenfeed and its baseline side by side in the same run,
on the same servers, and reports absolute numbers and their ratio. Results go to
``benchmarks/results/latest.json`` and ``latest.md`` with the machine's details.
"""
