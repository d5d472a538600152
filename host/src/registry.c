typedef int lk__placeholder_registry;
