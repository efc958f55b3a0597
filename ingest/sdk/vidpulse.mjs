// placeholder: replaced by the SDK
