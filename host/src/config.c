typedef int lk__placeholder_config;
