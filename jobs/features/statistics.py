"""Robust statistics over arrays, as Spark expressions."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def median_of_sorted(sorted_values: Column) -> Column:
    """The median of an ascending array (the mean of the two middle values when the count
    is even); null for an empty array."""
    n = F.size(sorted_values)
    mid = (n / 2).cast("int")
    odd = F.try_element_at(sorted_values, mid + 1)
    even = (F.try_element_at(sorted_values, mid) + F.try_element_at(sorted_values, mid + 1)) / 2
    return F.when(n == 0, F.lit(None).cast("double")).when(n % 2 == 1, odd).otherwise(even)
