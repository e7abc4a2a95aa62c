"""The business domain: rules, slots, dates, spoken forms, phone and time-zone checks. No I/O."""
