//! The binding cache: what is true about which subscriber holds which address and prefix.
