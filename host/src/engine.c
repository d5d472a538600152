typedef int lk__placeholder_engine;
