pub struct Engine; #[derive(Debug)] pub struct EngineError;
