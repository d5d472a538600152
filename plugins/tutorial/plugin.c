typedef int lk__placeholder_plugin;
